from scenarios.core.registry import ScenarioAppConfig


class EducationConfig(ScenarioAppConfig):
    default = True
    name = "scenarios.education"
    label = "scenarios_education"
    verbose_name = "Scenario: education"
    scenario = "education"
    scenario_title = "Education"
    scenario_description = (
        "Quizzes with answer keys, course outlines, study notes, exercises with solutions, flashcards, mock "
        "exams, lesson narration and illustrations for tutors, trainers and small schools."
    )
