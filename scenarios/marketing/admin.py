from django.contrib import admin

from scenarios.core.admin import RecipeAdmin, TemplateAdmin
from scenarios.marketing.models import MarketingRecipe, MarketingTemplate


@admin.register(MarketingTemplate)
class MarketingTemplateAdmin(TemplateAdmin):
    list_filter = ["is_active", ("tenant", admin.EmptyFieldListFilter)]


@admin.register(MarketingRecipe)
class MarketingRecipeAdmin(RecipeAdmin):
    list_filter = ["is_active"]
