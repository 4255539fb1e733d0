// The code box's typing aids, pure: Enter keeps the line's indentation and indents after a `for ...:` line,
// and the box grows with the code (the notebook's dC loop is five lines). Tab still moves the focus on.

export const MIN_ROWS = 3;
export const MAX_ROWS = 14;

// what Enter inserts at `caret` in `text`: a newline, the current line's indentation, two more after a colon
export function newlineAt(text, caret) {
  const line = text.slice(text.lastIndexOf("\n", caret - 1) + 1, caret);
  const indent = line.match(/^[ \t]*/)[0];
  return "\n" + indent + (line.trimEnd().endsWith(":") ? "  " : "");
}

// the whole-cell box passes its own bounds (Exercise 1's cell is 33 lines, its cmp lines 26 more)
export function rowsFor(text, min = MIN_ROWS, max = MAX_ROWS) {
  return Math.min(max, Math.max(min, text.split("\n").length));
}
