"""Things vowvault backs up: directory trees and PostgreSQL databases."""
