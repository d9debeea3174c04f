"""Prediction decoding of the fine-tune tasks: model outputs to the records `lmtool predict` prints and
`lmtool serve` returns."""
