"""History from GH Archive: an hour's name and URL (`hours`), its verified download (`fetch`) and
its load into raw_events (`bulk_load`)."""
