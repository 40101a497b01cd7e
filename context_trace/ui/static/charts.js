/*
 * The dashboard's charts, drawn with the vendored uPlot (static/vendor/uplot).
 *
 * A chart is a <figure class="chart"> whose data attributes say what to draw:
 *   data-src     a JSON API address (same origin), e.g. /api/overview?range=7d
 *   data-series  the key of the array of points in its answer, e.g. "days"
 *   data-x       each point's day ("YYYY-MM-DD") or month ("YYYY-MM") key
 *   data-y       the plotted keys, comma-separated
 *   data-labels  their names, comma-separated (default: the keys)
 *   data-kind    "bars" (default) or "lines"
 * Once drawn, the figure gets data-points (how many points it shows).
 * A sparkline is a <span class="spark" data-values="1 0 3 ..."> (no axes).
 * Values are numbers read from JSON; no fetched text is ever parsed as HTML.
 */
(function () {
  "use strict";

  var COLOURS = ["#4a7bd0", "#d08a4a", "#5aa469", "#b3261e"];
  var cache = {};

  function getJSON(src) {
    if (!cache[src]) {
      cache[src] = fetch(src, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) {
          throw new Error(src + ": HTTP " + r.status);
        }
        return r.json();
      });
    }
    return cache[src];
  }

  function epoch(period) {
    // A UTC day or month as epoch seconds (uPlot's time axis).
    var day = period.length === 7 ? period + "-01" : period;
    return Date.parse(day + "T00:00:00Z") / 1000;
  }

  function utc(ts) {
    return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  }

  function draw(figure, points) {
    var xKey = figure.dataset.x || "day";
    var keys = (figure.dataset.y || "").split(",");
    var labels = (figure.dataset.labels || figure.dataset.y || "").split(",");
    var bars = (figure.dataset.kind || "bars") === "bars";
    var data = [points.map(function (p) { return epoch(String(p[xKey])); })];
    var series = [{ label: xKey === "period" ? "period" : "day" }];
    keys.forEach(function (key, i) {
      data.push(points.map(function (p) { return Number(p[key]) || 0; }));
      var s = {
        label: labels[i] || key,
        stroke: COLOURS[i % COLOURS.length],
        width: bars ? 1 : 2,
      };
      if (bars) {
        s.fill = COLOURS[i % COLOURS.length];
        s.paths = uPlot.paths.bars({ size: [0.8, 60] });
        s.points = { show: false };
      }
      series.push(s);
    });
    var holder = figure.querySelector(".plot") || figure;
    var width = Math.max(280, Math.min(holder.clientWidth || 600, 640));
    new uPlot(
      {
        width: width,
        height: 180,
        tzDate: utc,
        series: series,
        scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi)]; } } },
        axes: [{}, { size: 44 }],
      },
      data,
      holder
    );
    figure.dataset.points = String(points.length);
  }

  function fail(figure, err) {
    var note = document.createElement("p");
    note.className = "empty";
    note.textContent = "This chart could not be loaded (" + err.message + ").";
    figure.appendChild(note);
    figure.dataset.points = "error";
  }

  function sparkline(span) {
    var values = (span.dataset.values || "").split(" ").filter(Boolean).map(Number);
    var xs = values.map(function (_, i) { return i; });
    new uPlot(
      {
        width: 72,
        height: 18,
        legend: { show: false },
        cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        scales: { x: { time: false }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi)]; } } },
        series: [{}, { stroke: COLOURS[0], width: 1.5, points: { show: false } }],
      },
      [xs, values],
      span
    );
    span.dataset.points = String(values.length);
  }

  function start() {
    document.querySelectorAll("figure.chart[data-src]").forEach(function (figure) {
      getJSON(figure.dataset.src)
        .then(function (body) { draw(figure, body[figure.dataset.series] || []); })
        .catch(function (err) { fail(figure, err); });
    });
    document.querySelectorAll("span.spark[data-values]").forEach(sparkline);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
