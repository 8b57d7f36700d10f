//! spindle-cmdline (being written).
