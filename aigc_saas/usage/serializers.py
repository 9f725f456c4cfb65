from rest_framework import serializers


class _Totals(serializers.Serializer):
    jobs = serializers.IntegerField(help_text="Jobs that ended (succeeded, failed or cancelled) that day.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    tokens_in = serializers.IntegerField(help_text="Text tokens read (prompts).")
    tokens_out = serializers.IntegerField(help_text="Text tokens written.")
    images = serializers.IntegerField(help_text="Images produced.")
    image_megapixel_steps = serializers.FloatField(help_text="Sum over images of width x height x steps / 1e6.")
    audio_seconds = serializers.FloatField(help_text="Seconds of audio produced.")
    run_seconds = serializers.FloatField(help_text="Seconds workers spent generating.")


class DailyUsageSerializer(_Totals):
    date = serializers.DateField(help_text="UTC day the jobs ended.")
    generator = serializers.CharField()


class GeneratorUsageSerializer(_Totals):
    generator = serializers.CharField()


class UsageReportSerializer(serializers.Serializer):
    since = serializers.DateField()
    until = serializers.DateField()
    days = DailyUsageSerializer(many=True)
    totals = GeneratorUsageSerializer(many=True)
