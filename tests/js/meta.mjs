// A /api/meta answer as the tests' fixture: two modes and a few config fields (not the server's values:
// the functions under test must take whatever the server declares).
export const META = {
  default_mode: "atomic",
  modes: [
    { name: "atomic", label: "Exercise 1", title: "Exercise 1: every line", steps: 20 },
    { name: "fused", label: "Exercises 2+3", title: "both fused", steps: 7 },
  ],
  config: {
    seed: { default: 1234, minimum: 0, maximum: 99999, choices: null },
    batch_size: { default: 32, minimum: 2, maximum: 512, choices: null },
    dtype: { default: "float32", minimum: null, maximum: null, choices: ["float32", "float64"] },
    bug: { default: "", minimum: null, maximum: null, choices: ["", "bessel_n"] },
  },
};
