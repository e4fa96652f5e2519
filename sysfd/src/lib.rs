//! Linux fd event sources for Furrow agents.
