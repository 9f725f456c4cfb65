"""Generator plugins: the contract, discovery, errors and the built-ins. No Django here."""
