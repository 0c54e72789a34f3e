//! Corpus n-gram statistics for the metadata builder (owned by the metadata-builder work).
