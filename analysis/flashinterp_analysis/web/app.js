// flashinterp map pages: small interactive parts (no library, nothing fetched).
// A <div class="chart"> holds its data as JSON in data-chart:
//   {x: [..], xlabel, ylabel, series: [{name, y: [..]}], href: "/layer/up/" (optional: click -> href + x)}
// and becomes an SVG line chart with a point per x, the value under the pointer shown below it.
(function () {
  var NS = 'http://www.w3.org/2000/svg', COLORS = ['#4a7fc1', '#c1574a', '#4aa15a', '#8a5ac1'];
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null) return 'n/a';
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(1) : (a > 0 && a < 0.01) ? v.toExponential(2) : v.toPrecision(4);
  }
  function chart(div) {
    var d = JSON.parse(div.getAttribute('data-chart'));
    var W = 640, H = 240, L = 60, R = 10, T = 10, B = 40;
    var ys = [];
    d.series.forEach(function (s) { s.y.forEach(function (v) { if (v !== null) ys.push(v); }); });
    var lo = Math.min.apply(null, ys.concat([0])), hi = Math.max.apply(null, ys.concat([1e-9]));
    var n = d.x.length, sx = function (i) { return L + (n > 1 ? i * (W - L - R) / (n - 1) : (W - L - R) / 2); };
    var sy = function (v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo || 1)); };
    var svg = el('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H});
    el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#888'}, svg);
    el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#888'}, svg);
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      var t = el('text', {x: L - 4, y: sy(v) + 4, 'text-anchor': 'end', 'font-size': 11}, svg);
      t.textContent = fmt(v);
    });
    var step = Math.max(1, Math.ceil(n / 16));
    for (var i = 0; i < n; i += step) {
      var t = el('text', {x: sx(i), y: H - B + 14, 'text-anchor': 'middle', 'font-size': 11}, svg);
      t.textContent = d.x[i];
    }
    var xl = el('text', {x: (L + W) / 2, y: H - 6, 'text-anchor': 'middle', 'font-size': 12}, svg);
    xl.textContent = d.xlabel;
    var yl = el('text', {x: 12, y: (T + H - B) / 2, 'font-size': 12, 'text-anchor': 'middle',
                         transform: 'rotate(-90 12 ' + (T + H - B) / 2 + ')'}, svg);
    yl.textContent = d.ylabel;
    var tip = document.createElement('div');
    tip.className = 'tip';
    d.series.forEach(function (s, si) {
      var pts = [];
      s.y.forEach(function (v, i) { if (v !== null) pts.push(sx(i) + ',' + sy(v)); });
      el('polyline', {points: pts.join(' '), fill: 'none', stroke: COLORS[si % 4], 'stroke-width': 1.5}, svg);
      s.y.forEach(function (v, i) {
        if (v === null) return;
        var c = el('circle', {cx: sx(i), cy: sy(v), r: 4, fill: COLORS[si % 4], 'data-x': d.x[i]}, svg);
        var text = d.xlabel + ' ' + d.x[i] + ': ' + s.name + ' ' + fmt(v);
        el('title', {}, c).textContent = text;
        c.addEventListener('mouseover', function () { tip.textContent = text; });
        if (d.href) c.addEventListener('click', function () { location.href = d.href + d.x[i]; });
      });
    });
    div.appendChild(svg);
    div.appendChild(tip);
  }
  var charts = document.querySelectorAll('div.chart');
  for (var i = 0; i < charts.length; i++) chart(charts[i]);
  // Neuron pages: the left and right arrow keys go to the previous and next neuron.
  document.addEventListener('keydown', function (e) {
    if (e.target.tagName === 'INPUT') return;
    var a = document.getElementById(e.key === 'ArrowLeft' ? 'prev' : e.key === 'ArrowRight' ? 'next' : '');
    if (a) location.href = a.href;
  });
})();
