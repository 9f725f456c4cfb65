from dataclasses import asdict

from django.core.management.base import BaseCommand

from aigc_saas.jobs.hardware_report import cache_lines, device_lines
from aigc_saas.jobs.models import WorkerStatus
from hardware import detect_devices


class Command(BaseCommand):
    help = "Devices on this machine, then each worker's devices, cache budget, occupancy and loaded models."

    def handle(self, **options) -> None:
        self.stdout.write("This machine:")
        for line in device_lines([asdict(d) for d in detect_devices()]):
            self.stdout.write(f"  {line}")
        workers = WorkerStatus.objects.all()
        if not workers:
            self.stdout.write("No worker has reported yet (workers report when they start and after each job).")
        for worker in workers:
            self.stdout.write(
                f"\nWorker {worker.name}  queues {worker.queues}  last report {worker.updated_at:%Y-%m-%d %H:%M:%S}"
            )
            for line in device_lines(worker.devices) + cache_lines(worker.cache):
                self.stdout.write(f"  {line}")
