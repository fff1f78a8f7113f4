"""Resources shared by several kinds: the lake, HTTP credentials, retries and rate limits, the
brokers, SQL session settings. A resource only one kind uses lives in that kind's folder (``sources/<kind>/``)."""
