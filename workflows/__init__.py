"""Part of InferoFabric (imported as inferofabric.workflows)."""
