"""Sample-quality metrics: streaming feature statistics, the Fréchet distance, KID, and feature extractors.

    from analytic_dpm.metrics import LeNetFeatures, train_feature_classifier, feature_statistics, fd_score
    model, acc = train_feature_classifier(images, labels, steps=500, seed=0)   # offline stand-in
    ref = feature_statistics(model, images)                                     # FeatureStatistics (float64)
    print(fd_score(model, ref, samples))                                        # "FD-LeNet = ..."

"FID" is reported only with the pytorch-fid InceptionV3 loaded from the user's verified weights file
(:func:`load_fid_inception`); nothing is downloaded. Every other extractor reports under its own name.
"""

from .features import (
    FeatureExtractor,
    MetricResult,
    extract_features,
    fd_score,
    feature_statistics,
    kernel_metric_name,
    kid_score,
)
from .frechet import (KIDResult, frechet_distance, frechet_distance_bootstrap, frechet_distance_paired_bootstrap,
                      kid, polynomial_mmd2_unbiased, trace_sqrt_product)
from .inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_SHA256,
    FID_WEIGHTS_SHA256_PREFIX,
    FID_WEIGHTS_URL,
    InceptionV3Features,
    load_fid_inception,
    sha256_of_file,
)
from .lenet import LeNetFeatures, TrainedClassifier, classifier_accuracy, train_feature_classifier
from .statistics import FeatureStatistics, all_gather_statistics, load_mu_sigma

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "FeatureExtractor",
    "FeatureStatistics",
    "InceptionV3Features",
    "KIDResult",
    "LeNetFeatures",
    "MetricResult",
    "TrainedClassifier",
    "all_gather_statistics",
    "classifier_accuracy",
    "extract_features",
    "fd_score",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_bootstrap",
    "frechet_distance_paired_bootstrap",
    "kernel_metric_name",
    "kid",
    "kid_score",
    "load_fid_inception",
    "load_mu_sigma",
    "polynomial_mmd2_unbiased",
    "sha256_of_file",
    "trace_sqrt_product",
    "train_feature_classifier",
]
