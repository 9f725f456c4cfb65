from django.contrib import admin

from scenarios.core.admin import RecipeAdmin, TemplateAdmin
from scenarios.ecommerce.models import EcommerceRecipe, EcommerceTemplate


@admin.register(EcommerceTemplate)
class EcommerceTemplateAdmin(TemplateAdmin):
    list_filter = ["is_active", ("tenant", admin.EmptyFieldListFilter)]


@admin.register(EcommerceRecipe)
class EcommerceRecipeAdmin(RecipeAdmin):
    list_filter = ["is_active"]
