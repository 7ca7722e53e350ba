"""The System tab: resident models against the budget, GPU readings over time, unload and pin buttons."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from models.footprint import GIB
from rag.status import MODEL_HEADERS, model_rows, status_lines

PLOTS = [
    ("vram", "GPU memory used (GiB) / 显存", "GiB"),
    ("temperature", "Temperature (°C) / 温度", "°C"),
    ("power", "Power (W) / 功耗", "W"),
    ("tokens_per_s", "Decode speed (tokens/s) / 生成速度", "tokens/s"),
]


class SystemPanel:
    def __init__(self, services, refresh_seconds: float = 2.0) -> None:
        self.services = services
        self.refresh_seconds = refresh_seconds

    # -- data ---------------------------------------------------------------------------------------------

    def series(self) -> dict[str, pd.DataFrame]:
        """Line-plot data for the last minutes; a GPU value that is absent gives no point, never a fake 0."""
        telemetry = self.services.telemetry
        now = time.time()
        columns: dict[str, list[tuple[float, float]]] = {key: [] for key, _, _ in PLOTS}
        for r in telemetry.readings:
            ago = round(r.time - now, 1)
            if r.memory_used is not None:
                columns["vram"].append((ago, r.memory_used / GIB))
            if r.temperature_c is not None:
                columns["temperature"].append((ago, r.temperature_c))
            if r.power_w is not None:
                columns["power"].append((ago, r.power_w))
        for g in telemetry.generations:
            columns["tokens_per_s"].append((round(g.time - now, 1), g.tokens_per_s))
        return {key: pd.DataFrame(points, columns=["seconds ago", "value"]) for key, points in columns.items()}

    def refresh(self):
        state = self.services.governor.state()
        reading = self.services.telemetry.readings[-1] if self.services.telemetry.readings else None
        if reading is None:
            reading = self.services.telemetry.sample()
        summary = "\n".join(status_lines(state, reading)[:3])
        loading = self.services.governor.loading()
        if loading:
            summary += f"\n\n**Loading {loading}… / 正在加载 {loading}…**"
        rows = model_rows(state)
        events = "\n".join(reversed(state.events[-12:])) or "—"
        plots = self.series()
        return (
            f"```\n{summary}\n```",
            rows,
            gr.update(choices=[m.name for m in state.models]),
            events,
            *[plots[key] for key, _, _ in PLOTS],
        )

    # -- actions ------------------------------------------------------------------------------------------

    def unload(self, name: str | None) -> str:
        if not name:
            return "Choose a model. / 请选择模型。"
        if self.services.governor.unload(name):
            return f"Unloaded **{name}**. / 已卸载。"
        return f"**{name}** is not resident or is in use. / 未加载或正在使用。"

    def pin(self, name: str | None, pinned: bool) -> str:
        if not name:
            return "Choose a model. / 请选择模型。"
        self.services.governor.pin(name, pinned)
        return f"{'Pinned' if pinned else 'Unpinned'} **{name}**. / 已{'固定' if pinned else '取消固定'}。"

    # -- layout -------------------------------------------------------------------------------------------

    def build(self) -> None:
        summary = gr.Markdown(elem_id="system-summary")
        models = gr.Dataframe(headers=MODEL_HEADERS, interactive=False, elem_id="models")
        with gr.Row():
            chosen = gr.Dropdown(label="Model / 模型", choices=[], scale=3, elem_id="model-choice")
            unload = gr.Button("Unload / 卸载", scale=1, elem_id="unload")
            pin = gr.Button("Pin / 固定", scale=1, elem_id="pin")
            unpin = gr.Button("Unpin / 取消固定", scale=1, elem_id="unpin")
        message = gr.Markdown()
        with gr.Row():
            plots = [
                gr.LinePlot(x="seconds ago", y="value", title=title, y_title=unit, height=220, elem_id=f"plot-{key}")
                for key, title, unit in PLOTS[:2]
            ]
        with gr.Row():
            plots += [
                gr.LinePlot(x="seconds ago", y="value", title=title, y_title=unit, height=220, elem_id=f"plot-{key}")
                for key, title, unit in PLOTS[2:]
            ]
        with gr.Accordion("Governor log / 调度日志", open=False):
            events = gr.Textbox(lines=8, show_label=False, interactive=False, elem_id="governor-log")

        outputs = [summary, models, chosen, events, *plots]
        timer = gr.Timer(self.refresh_seconds)
        timer.tick(self.refresh, None, outputs, api_name=False, show_progress="hidden")
        unload.click(self.unload, [chosen], [message], api_name="unload_model").then(
            self.refresh, None, outputs, api_name=False
        )
        pin.click(lambda n: self.pin(n, True), [chosen], [message], api_name="pin_model").then(
            self.refresh, None, outputs, api_name=False
        )
        unpin.click(lambda n: self.pin(n, False), [chosen], [message], api_name="unpin_model").then(
            self.refresh, None, outputs, api_name=False
        )
        self.outputs = outputs
