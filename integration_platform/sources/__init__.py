"""One folder per source kind: its component (YAML -> assets), its extractor, and the resources
only it uses. A kind imports ``core``, ``assets``, ``resources`` and ``outbound``, never another kind."""
