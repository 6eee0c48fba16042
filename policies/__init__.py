"""Part of InferoFabric (imported as inferofabric.policies)."""
