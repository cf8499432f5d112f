//! What isolation costs, measured in-process for `bytejail bench` (being written).
