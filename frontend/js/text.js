// Text helpers with no page around them (the renderers use them; unit tests import them in Node).

// text for innerHTML: the server's names, formulas and messages are shown, never interpreted
export const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
