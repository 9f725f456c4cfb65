from django.contrib import admin

from scenarios.core.admin import RecipeAdmin, TemplateAdmin
from scenarios.education.models import EducationRecipe, EducationTemplate


@admin.register(EducationTemplate)
class EducationTemplateAdmin(TemplateAdmin):
    list_filter = ["is_active", ("tenant", admin.EmptyFieldListFilter)]


@admin.register(EducationRecipe)
class EducationRecipeAdmin(RecipeAdmin):
    list_filter = ["is_active"]
