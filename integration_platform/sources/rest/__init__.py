"""REST APIs: RestSource, its extractor (pages, parents -> children), client, paginators."""
