"""Part of InferoFabric (imported as inferofabric.activities)."""
