"""Part of InferoFabric (imported as inferofabric.worker)."""
