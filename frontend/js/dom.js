// Two page helpers shared by the explorer and the training page.

// text for innerHTML: the server's names, formulas and messages are shown, never interpreted
export const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// plotly.min.js is a deferred script after the page's module: the module starts its API requests while
// plotly.js compiles, and draws once this resolves
export const plotlyReady = new Promise((resolve) => {
  if (window.Plotly) resolve();
  else document.getElementById("plotly").addEventListener("load", resolve, { once: true });
});
