//! The user-facing API: CRD types of group `azml.dev`, version `v1alpha1`.
