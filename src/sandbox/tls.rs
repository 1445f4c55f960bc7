//! A throwaway certificate authority and TLS server configs for the emulators.
