from django.apps import AppConfig


class EducationConfig(AppConfig):
    name = "scenarios.education"
    label = "scenarios_education"
