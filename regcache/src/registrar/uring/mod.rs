//! io_uring software NIC (in progress).
