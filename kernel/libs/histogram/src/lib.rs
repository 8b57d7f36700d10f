//! spindle-histogram (being written).
