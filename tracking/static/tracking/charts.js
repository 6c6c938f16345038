// Charts of the overview and the lead page, drawn with the plotly.js the server ships.
(function () {
  "use strict";
  if (!window.Plotly) return;
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const base = { showlegend: true, margin: { t: 10, r: 10, b: 50, l: 60 }, legend: { orientation: "h", y: -0.25 }, height: 300 };
  const pct = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 10);
  const drawn = [];

  function plot(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el) return;
    drawn.push(Plotly.newPlot(el, traces, Object.assign({}, base, layout), config));
  }

  const dataEl = document.getElementById("chart-data");
  if (dataEl) {
    const d = JSON.parse(dataEl.textContent);

    // Success by stage, treated with its 95% interval, the holdout, and the target.
    const stages = [1, 2, 3];
    const byStage = Object.fromEntries(d.success_by_stage.map((r) => [r.stage, r]));
    const row = (s) => byStage[s] || { rate: null, ci_low: null, ci_high: null, holdout: {} };
    plot("chart-success", [
      {
        type: "bar", name: "Treated", x: stages.map((s) => `Stage ${s}`),
        y: stages.map((s) => pct(row(s).rate)),
        error_y: {
          type: "data", symmetric: false,
          array: stages.map((s) => (row(s).rate === null ? 0 : pct(row(s).ci_high - row(s).rate))),
          arrayminus: stages.map((s) => (row(s).rate === null ? 0 : pct(row(s).rate - row(s).ci_low))),
        },
        text: stages.map((s) => `n=${row(s).n || 0}`), hovertemplate: "%{y}% (%{text})<extra>Treated</extra>",
      },
      {
        type: "bar", name: "Holdout", x: stages.map((s) => `Stage ${s}`),
        y: stages.map((s) => pct((row(s).holdout || {}).rate)), marker: { color: "#b0b7c3" },
      },
      {
        type: "scatter", mode: "markers", name: "Target", x: stages.map((s) => `Stage ${s}`),
        y: stages.map((s) => pct(d.targets[String(s)])),
        marker: { symbol: "line-ew-open", size: 40, line: { width: 3, color: "#d9480f" } },
      },
    ], { barmode: "group", yaxis: { title: { text: "Success rate (%)" }, range: [0, 100], ticksuffix: "%" } });

    // Channel funnel: messages sent, delivered, engaged (opened or clicked), replied.
    const steps = ["sent", "delivered", "opened_or_clicked", "replied"];
    const labels = ["Sent", "Delivered", "Engaged", "Replied"];
    plot("chart-funnel", d.funnel.length ? d.funnel.map((r) => ({
      type: "bar", name: r.channel, x: labels, y: steps.map((k) => r[k]),
    })) : [{ type: "bar", name: "no messages yet", x: labels, y: [0, 0, 0, 0] }],
    { barmode: "group", yaxis: { title: { text: "Messages" }, rangemode: "tozero" } });

    // Churn over time, treated against holdout, each with its 95% band.
    const xs = d.churn_series.map((p) => p.from);
    const arm = (name, color, fill) => {
      const pts = d.churn_series.map((p) => p[name]);
      return [
        { x: xs, y: pts.map((p) => pct(p.ci_high)), mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip", type: "scatter", connectgaps: false },
        { x: xs, y: pts.map((p) => pct(p.ci_low)), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: fill, name: `${name} 95% CI`, hoverinfo: "skip", type: "scatter" },
        { x: xs, y: pts.map((p) => pct(p.rate)), mode: "lines+markers", line: { color }, name: `${name[0].toUpperCase()}${name.slice(1)} churn`, type: "scatter",
          text: pts.map((p) => `${p.churned}/${p.episodes} episodes`), hovertemplate: "%{y}% (%{text})" },
      ];
    };
    plot("chart-churn", [...arm("treated", "#1c7ed6", "rgba(28,126,214,0.18)"), ...arm("holdout", "#868e96", "rgba(134,142,150,0.18)")],
      { xaxis: { title: { text: "Period start (UTC)" }, type: "date" }, yaxis: { title: { text: "Churned episodes (%)" }, rangemode: "tozero", ticksuffix: "%" } });

    // Risk distribution: scored leads per score band.
    plot("chart-risk", [{
      type: "bar", name: "Leads", x: d.score_histogram.map((b) => `${b.from.toFixed(1)}–${b.to.toFixed(1)}`),
      y: d.score_histogram.map((b) => b.leads), marker: { color: "#e8590c" },
    }], { showlegend: true, xaxis: { title: { text: "Risk score" } }, yaxis: { title: { text: "Leads" }, rangemode: "tozero" } });

    // Escalation times: percentiles of acknowledge and resolve, in minutes.
    const esc = d.escalation_times;
    const qs = ["p50", "p90", "p95"];
    const mins = (h) => qs.map((q) => (h[q] === null || h[q] === undefined ? null : Math.round(h[q] / 6) / 10));
    plot("chart-escalations", [
      { type: "bar", name: `To acknowledge (n=${esc.time_to_acknowledge_seconds.n})`, x: qs, y: mins(esc.time_to_acknowledge_seconds) },
      { type: "bar", name: `To resolve (n=${esc.time_to_resolve_seconds.n})`, x: qs, y: mins(esc.time_to_resolve_seconds) },
    ], { barmode: "group", xaxis: { title: { text: "Percentile" } }, yaxis: { title: { text: "Minutes" }, rangemode: "tozero" } });
  }

  const historyEl = document.getElementById("history-data");
  if (historyEl) {
    const h = JSON.parse(historyEl.textContent);
    plot("chart-history", [{
      type: "scatter", mode: "lines+markers", name: "Risk score", line: { shape: "hv" },
      x: h.map((p) => p.at), y: h.map((p) => p.score),
      text: h.map((p) => `${p.tier} · model ${p.model_version || "?"}`),
      hovertemplate: "%{y:.2f}<br>%{text}<extra></extra>",
    }], { showlegend: true, xaxis: { title: { text: "Assessed at (UTC)" }, type: "date" },
      yaxis: { title: { text: "Risk score (0–1)" }, range: [0, 1] } });
  }

  Promise.all(drawn).then(() => { document.body.dataset.chartsReady = String(drawn.length); });
})();
