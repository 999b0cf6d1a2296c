//! Service Bus event bus over REST (in progress).
