//! A FUSE filesystem that loses every byte not yet fsynced when its process dies.
