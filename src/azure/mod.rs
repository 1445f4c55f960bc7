//! Typed client for Azure Resource Manager.
