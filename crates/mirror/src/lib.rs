//! The FUSE mirror of `/`: one mount, one subtree per view (`MNT/<view-id>/…`
//! mirrors `/`), every access by a view's process tree recorded by real path.
mod record;
pub use record::{Access, Kind, Record, Stamp};
