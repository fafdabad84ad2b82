"""Input drift against the training reference: per-window histograms on the reference
bins (:mod:`.observer`, :mod:`.store`), Jensen-Shannon distance and PSI (:mod:`.stats`),
and the report (:mod:`.report`)."""
