//! Monitor selection (in progress).
