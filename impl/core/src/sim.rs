//! Deterministic in-process network simulator. PLACEHOLDER: the simulator
//! helper replaces this file.
