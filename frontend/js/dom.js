// Page helpers shared by the explorer and the training page.
export { esc } from "./text.js";

// plotly.js (4.8 MB) as a promise of window.Plotly, fetched on the first call: the explorer asks for it once its
// graph is drawn, so that nothing a learner reads or clicks first waits for it. A page that lists it as a script
// of its own (id "plotly") waits for that one. The URL goes through the page's import map, which names the
// server's fingerprinted copy (kept by the browser for good: a repeat visit fetches nothing).
let plotly = null;
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      const listed = document.getElementById("plotly");
      const script = listed || Object.assign(document.createElement("script"), { src: import.meta.resolve("/vendor/plotly.min.js") });
      script.addEventListener("load", () => resolve(window.Plotly), { once: true });
      script.addEventListener("error", () => { plotly = null; reject(new Error("plotly.js could not be loaded: reload the page")); }, { once: true });
      if (!listed) document.head.append(script);
    });
  }
  return plotly;
}
