"""What the page shows of a pass: views, the graph's layout, derivations and worked examples."""
