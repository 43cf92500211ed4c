"""Sample systems under test, each with its cachestorm target (see docs/three-services.md)."""
