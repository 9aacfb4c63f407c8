//! Kernel benchmark (filled in below).
