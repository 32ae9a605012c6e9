//! Why an image layer was refused while it was unpacked: one variant per budget or
//! rule an entry can break, the I/O that failed, and the entry it happened at.

use std::{io, path::PathBuf};

use archy_catalog::oci;
use rustix::io::Errno;

/// Why a layer was refused: the budget or rule an entry broke, or the I/O that failed,
/// wrapped in [`LayerFault::Entry`] with the entry's path where one is known.
#[derive(Debug, thiserror::Error)]
pub enum LayerFault {
    #[error("entry {entry}: {fault}")]
    Entry {
        entry: String,
        #[source]
        fault: Box<LayerFault>,
    },
    #[error("whiteout {entry}: {fault}")]
    Whiteout {
        entry: String,
        #[source]
        fault: Box<LayerFault>,
    },
    #[error("missing from the archive")]
    MissingFromArchive,
    #[error("more than {0} entries (unpack budget max_entries)")]
    TooManyEntries(u64),
    #[error("path longer than {0} bytes (unpack budget max_path_bytes)")]
    PathTooLong(usize),
    #[error("absolute path in a layer")]
    AbsolutePath,
    #[error("'..' leaves the root")]
    LeavesRoot,
    #[error("deeper than {0} components (unpack budget max_depth)")]
    TooDeep(usize),
    #[error("whiteout of no file")]
    WhiteoutOfNothing,
    #[error("{0} out of range")]
    IdOutOfRange(&'static str),
    #[error("{0} without a target")]
    LinkWithoutTarget(&'static str),
    #[error("symlink target longer than the path budget (max_path_bytes)")]
    LinkTargetTooLong,
    #[error("hardlink to the root")]
    HardlinkToRoot,
    #[error("hardlink to {0}, which is not in the image")]
    HardlinkOutside(PathBuf),
    #[error("hardlink to {target}: {source}")]
    Hardlink { target: PathBuf, source: io::Error },
    #[error("{0} is not a directory (a file, or a symlink to nothing)")]
    NotADirectory(PathBuf),
    #[error("the rootfs is gone")]
    RootfsGone,
    #[error("{path}: {source}")]
    Resolve { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Stream(#[from] oci::OciError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<Errno> for LayerFault {
    fn from(e: Errno) -> Self {
        LayerFault::Io(e.into())
    }
}

impl LayerFault {
    /// The fault as seen at entry `entry` (shown as the layer spells it, cut at 200 bytes).
    pub(super) fn at_entry(entry: &[u8]) -> impl FnOnce(LayerFault) -> LayerFault + '_ {
        move |fault| LayerFault::Entry {
            entry: String::from_utf8_lossy(&entry[..entry.len().min(200)]).into_owned(),
            fault: Box::new(fault),
        }
    }
}
