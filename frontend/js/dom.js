// Page helpers shared by the explorer and the training page.
export { esc } from "./text.js";

// plotly.min.js is a deferred script after the page's module: the module starts its API requests while
// plotly.js compiles, and draws once this resolves
export const plotlyReady = new Promise((resolve) => {
  if (window.Plotly) resolve();
  else document.getElementById("plotly").addEventListener("load", resolve, { once: true });
});
