"""Topo-clustering (4-2-0), the splitter and cluster moments (physics.md 5-6).

Typical use over many events (cells as CSR over events)::

    from pionml.reco.clustering import cluster_events, cluster_moments
    batch = cluster_events(event_offsets, cell, E, sigma, geo)
    moments = cluster_moments(batch, cell, E, sigma, geo, truth={...})  # {NAME: array}

``moments[NAME]`` is the MLTree branch ``cluster_<NAME>``.
"""

from pionml.reco.clustering.moments import MomentConfig, cluster_moments
from pionml.reco.clustering.tables import CellTables, as_tables
from pionml.reco.clustering.topo import (ClusterBatch, Clusters, TopoConfig, cluster_events,
                                    topo_cluster)

__all__ = ["CellTables", "as_tables", "TopoConfig", "Clusters", "ClusterBatch", "topo_cluster",
           "cluster_events", "MomentConfig", "cluster_moments"]
