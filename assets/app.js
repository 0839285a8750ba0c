() => {
  // Presentation mode scales the plots' fonts too. Plotly draws them from each figure's layout, so each
  // plot is re-laid out in the page when it renders, and put back when the mode is turned off.
  const BIG = 18;  // px, against plotly's 12
  const scale = (div) => {
    if (!window.Plotly || !div.layout || !div._fullLayout) return;
    const on = document.documentElement.classList.contains("pp-present");
    const size = (div.layout.font || {}).size;
    if (on && size !== BIG) {  // a figure as the server sent it: keep its own sizes to go back to
      const m = div._fullLayout.margin, h = div._fullLayout.height;
      div.dataset.ppOrig = JSON.stringify({t: m.t, b: m.b, l: m.l, r: m.r, h: div.layout.height ? h : null});
      window.Plotly.relayout(div, {"font.size": BIG, "title.font.size": BIG + 6, "margin.t": Math.round(m.t * 1.5),
        "margin.b": Math.round(m.b * 1.5), "margin.l": Math.round(m.l * 1.3), height: Math.round(h * 1.35)});
    } else if (!on && size === BIG && div.dataset.ppOrig) {
      const o = JSON.parse(div.dataset.ppOrig);
      window.Plotly.relayout(div, {"font.size": null, "title.font.size": null, "margin.t": o.t, "margin.b": o.b,
        "margin.l": o.l, height: o.h});
    }
  };
  // Hover hints: a glossary term in a label, a table header or code text gets its meaning as a tooltip.
  const terms = Object.entries(window.ppGlossary || {}).sort((a, b) => b[0].length - a[0].length);
  const HINTED = "th, code, label span, [data-testid='block-info'], [data-testid='block-label']";
  const hint = () => document.querySelectorAll(HINTED).forEach((el) => {
    const text = el.textContent || "";
    if (el.dataset.ppHint === text || (el.title && !el.classList.contains("pp-hint"))) return;  // seen, or not ours
    el.dataset.ppHint = text;  // Gradio reuses elements: check again when the text changes
    const found = text.length < 300 && terms.find(([t]) => text.includes(t));
    el.classList.toggle("pp-hint", !!found);
    if (found) el.title = `${found[0]}: ${found[1]}`; else el.removeAttribute("title");
  });
  const all = () => { document.querySelectorAll(".js-plotly-plot").forEach(scale); hint(); };
  let pending = false;
  new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; all(); }); }
  }).observe(document.body, {subtree: true, childList: true});
  window.ppPresent = (on) => {
    document.documentElement.classList.toggle("pp-present", !!on);
    const url = new URL(window.location.href);
    if (on) url.searchParams.set("present", "1"); else url.searchParams.delete("present");
    window.history.replaceState(null, "", url);
    all();
  };
}
