//! spindle-records (being written).
