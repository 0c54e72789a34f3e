//! Language identification (owned by the LID work).
