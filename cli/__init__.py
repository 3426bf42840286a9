"""The ``p2p-local`` command line: a thin typer shell over :class:`p2p_local.api.Personalizer`."""
