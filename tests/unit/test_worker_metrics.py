"""The worker's scheduler gauges: vLLM's SchedulerStats, kept by our stat logger, rendered by
the Prometheus exporter with the model as the only label."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from vllm.v1.metrics.stats import SchedulerStats

from gateway.metrics import MetricsExport
from tests.fakes.engine import FakeEngine
from workers.engine import EngineLoad
from workers.health import WorkerMetrics
from workers.vllm_outputs import LoadRecorder


class LoadedEngine(FakeEngine):
    def __init__(self, recorder: LoadRecorder) -> None:
        super().__init__(capacity=16, model="chat")
        self.recorder = recorder

    def load(self) -> EngineLoad:
        return self.recorder.latest


def gauges(export: MetricsExport) -> dict[str, tuple[float, dict[str, str]]]:
    text = export.render().decode()
    return {
        s.name: (s.value, s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("enclave_worker_")
    }


def test_the_scheduler_figures_vllm_reports_are_the_workers_gauges() -> None:
    recorder = LoadRecorder()
    export = MetricsExport("worker")
    WorkerMetrics(export.meter, LoadedEngine(recorder))
    assert gauges(export)["enclave_worker_running"] == (0.0, {"model": "chat"})

    stats = SchedulerStats(
        num_running_reqs=5, num_waiting_reqs=2, num_skipped_waiting_reqs=1, kv_cache_usage=0.375
    )
    recorder.record(stats, None)
    recorder.record(None, None)  # an output step without scheduler figures changes nothing
    figures = gauges(export)
    assert figures["enclave_worker_running"] == (5.0, {"model": "chat"})
    assert figures["enclave_worker_waiting"] == (3.0, {"model": "chat"})
    assert figures["enclave_worker_kv_cache_usage_ratio"] == (0.375, {"model": "chat"})
    assert figures["enclave_worker_capacity"] == (16.0, {"model": "chat"})
    export.shutdown()
