"""Tickets for debug reports: adapters for the platform's generic ticket API, Jira and GitHub issues."""
