// A 3-D tensor drawn as a heatmap: two of its axes are the map's rows and columns, the third is cut at one
// index (the slice). Pure functions of the tensor's shape and axis names: any pack's 3-D node, no DOM.

// Every way to lay three axes out as rows × columns, the third sliced: six.
export const LAYOUTS = [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]].map(([rows, cols]) => ({ rows, cols, cut: 3 - rows - cols }));

// The layout a node opens in: its batch axis sliced at row 0 (so a (B,T,T) attention map shows one batch row's
// query × key map), the other two in their order; a tensor without a batch axis is sliced along its first.
export function defaultLayout(axes) {
  const cut = Math.max(0, axes.indexOf("batch"));
  const [rows, cols] = [0, 1, 2].filter((a) => a !== cut);
  return { rows, cols, cut };
}

// The layout [rows, cols] asks for (the URL's axes), or the node's default when none is asked
export function layoutOf(axes, asked = null) {
  if (!asked) return defaultLayout(axes);
  return LAYOUTS.find((l) => l.rows === asked[0] && l.cols === asked[1]) || defaultLayout(axes);
}

// the index of the slice shown: the one asked for, kept inside the sliced axis
export const clampIndex = (index, size) => Math.max(0, Math.min(size - 1, Number.isInteger(index) ? index : 0));

// the tensor index of the map's cell (i, j) in slice `index`
export function entryAt(layout, index, i, j) {
  const entry = [0, 0, 0];
  entry[layout.rows] = i;
  entry[layout.cols] = j;
  entry[layout.cut] = index;
  return entry;
}

// The map (rows × cols nested lists) of a 3-D tensor's nested data, cut at `index` of the layout's sliced axis.
export function sliceOf(data, shape, layout, index) {
  const z = [];
  for (let i = 0; i < shape[layout.rows]; i++) {
    const row = [];
    for (let j = 0; j < shape[layout.cols]; j++) {
      const [a, b, c] = entryAt(layout, index, i, j);
      row.push(data[a][b][c]);
    }
    z.push(row);
  }
  return z;
}

// "rows,cols" as the URL writes a layout; null for the node's default
export const layoutParam = (layout) => (layout ? `${layout[0]},${layout[1]}` : null);

// A URL's axes parameter: [rows, cols] (two different axes of three), or null when it is not one
export function parseLayout(text) {
  const m = /^([0-2]),([0-2])$/.exec(text || "");
  if (!m || m[1] === m[2]) return null;
  return [Number(m[1]), Number(m[2])];
}
