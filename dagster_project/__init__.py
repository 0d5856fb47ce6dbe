"""Nachfass: warehouse-native follow-up mails for online shops."""
