//! spindle-tools (being written).
