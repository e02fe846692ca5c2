"""The components an uploaded archive may name: building blocks that compute on data and cannot
touch the file system, the network or the interpreter, listed by name.

An uploaded archive is data. Its configs may only build transforms, networks, losses, inferers,
metrics, optimizers and schedulers from this list; anything else (a function that saves a file,
a loader that reads a path, a transform that calls a given function, a network that downloads
weights) is refused before anything is built (:mod:`carina.archive.security`). The list is fixed
here, not derived at run time, so that a library upgrade cannot widen it unseen:
``tests/archive/test_security.py`` checks that every name exists, is of an allowed family and has
no argument that names a file, a URL or a function. Left out on purpose: ``LoadImage``,
``SaveImage``, ``SaveClassification``, ``WriteFileMapping`` (files), ``Lambda``, ``RandLambda``,
``LambdaLR``, ``MultiplicativeLR`` (call a given function), ``DataStats`` (writes to the server's
log), ``SimulateDelay`` (sleeps), ``CuCIM``, ``TorchIO``, ``TorchVision`` (call a library function
by name), ``Transchex``, ``TorchVisionFCModel`` and the BERT parts (download weights), NVTX
markers and device moves.
"""

from __future__ import annotations

import functools
import importlib

#: Allowed component names by the package a config names them through.
_NAMES: dict[str, str] = {
    "monai.transforms": """
        Activations Activationsd AddCoordinateChannels AddCoordinateChannelsd
        AddExtremePointsChannel AddExtremePointsChanneld AdjustContrast AdjustContrastd
        Affine AffineGrid Affined ApplyPendingd ApplyTransformToPoints
        ApplyTransformToPointsd AsChannelLast AsChannelLastd AsDiscrete AsDiscreted
        BatchInverseTransform BorderPad BorderPadd BoundingRect BoundingRectd CastToType
        CastToTyped CenterScaleCrop CenterScaleCropd CenterSpatialCrop
        CenterSpatialCropd ClassesToIndices ClassesToIndicesd ClipIntensityPercentiles
        ClipIntensityPercentilesd Compose ComputeHoVerMaps ComputeHoVerMapsd
        ConcatItemsd ConvertBoxToPoints ConvertBoxToPointsd ConvertPointsToBoxes
        ConvertPointsToBoxesd ConvertToMultiChannelBasedOnBratsClasses
        ConvertToMultiChannelBasedOnBratsClassesd CopyItemsd Crop CropForeground
        CropForegroundd Cropd CutMix CutMixd CutOut CutOutd Decollated DeleteItemsd
        DetectEnvelope DistanceTransformEDT DistanceTransformEDTd DivisiblePad
        DivisiblePadd Ensembled EnsureChannelFirst EnsureChannelFirstd EnsureType
        EnsureTyped FgBgToIndices FgBgToIndicesd FillHoles FillHolesd FlattenSequence
        FlattenSequenced FlattenSubKeysd Flip Flipd ForegroundMask ForegroundMaskd
        FromMetaTensord GaussianSharpen GaussianSharpend GaussianSmooth GaussianSmoothd
        GenerateHeatmap GenerateHeatmapd GibbsNoise GibbsNoised GridDistortion
        GridDistortiond GridPatch GridPatchd GridSplit GridSplitd HistogramNormalize
        HistogramNormalized Identity Identityd ImageFilter ImageFilterd IntensityRemap
        IntensityStats IntensityStatsd Invert Invertd KSpaceSpikeNoise KSpaceSpikeNoised
        KeepLargestConnectedComponent KeepLargestConnectedComponentd LabelFilter
        LabelFilterd LabelToContour LabelToContourd LabelToMask LabelToMaskd
        MapLabelValued MaskIntensity MaskIntensityd MeanEnsemble MeanEnsembled
        MedianSmooth MedianSmoothd MixUp MixUpd NormalizeIntensity NormalizeIntensityd
        OneOf Orientation Orientationd Pad PadListDataCollate Padd ProbNMS ProbNMSd
        Rand2DElastic Rand2DElasticd Rand3DElastic Rand3DElasticd RandAdjustContrast
        RandAdjustContrastd RandAffine RandAffineGrid RandAffined RandAxisFlip
        RandAxisFlipd RandBiasField RandBiasFieldd RandCoarseDropout RandCoarseDropoutd
        RandCoarseShuffle RandCoarseShuffled RandCropByLabelClasses
        RandCropByLabelClassesd RandCropByPosNegLabel RandCropByPosNegLabeld RandCropd
        RandDeformGrid RandFlip RandFlipd RandGaussianNoise RandGaussianNoised
        RandGaussianSharpen RandGaussianSharpend RandGaussianSmooth RandGaussianSmoothd
        RandGibbsNoise RandGibbsNoised RandGridDistortion RandGridDistortiond
        RandGridPatch RandGridPatchd RandHistogramShift RandHistogramShiftd
        RandImageFilter RandImageFilterd RandIntensityRemap RandKSpaceSpikeNoise
        RandKSpaceSpikeNoised RandRicianNoise RandRicianNoised RandRotate RandRotate90
        RandRotate90d RandRotated RandScaleCrop RandScaleCropd RandScaleIntensity
        RandScaleIntensityFixedMean RandScaleIntensityFixedMeand RandScaleIntensityd
        RandShiftIntensity RandShiftIntensityd RandSimulateLowResolution
        RandSimulateLowResolutiond RandSmoothDeform RandSmoothDeformd
        RandSmoothFieldAdjustContrast RandSmoothFieldAdjustContrastd
        RandSmoothFieldAdjustIntensity RandSmoothFieldAdjustIntensityd RandSpatialCrop
        RandSpatialCropSamples RandSpatialCropSamplesd RandSpatialCropd
        RandStdShiftIntensity RandStdShiftIntensityd RandWeightedCrop RandWeightedCropd
        RandZoom RandZoomd RandomOrder RemoveRepeatedChannel RemoveRepeatedChanneld
        RemoveSmallObjects RemoveSmallObjectsd RepeatChannel RepeatChanneld Resample
        ResampleToMatch ResampleToMatchd Resize ResizeWithPadOrCrop ResizeWithPadOrCropd
        Resized Rotate Rotate90 Rotate90d Rotated SavitzkyGolaySmooth
        SavitzkyGolaySmoothd ScaleIntensity ScaleIntensityFixedMean ScaleIntensityRange
        ScaleIntensityRangePercentiles ScaleIntensityRangePercentilesd
        ScaleIntensityRanged ScaleIntensityd SelectItemsd ShiftIntensity ShiftIntensityd
        SignalContinuousWavelet SignalFillEmpty SignalFillEmptyd
        SignalRandAddGaussianNoise SignalRandAddSine SignalRandAddSinePartial
        SignalRandAddSquarePulse SignalRandAddSquarePulsePartial SignalRandDrop
        SignalRandScale SignalRandShift SignalRemoveFrequency SobelGradients
        SobelGradientsd SomeOf Spacing Spacingd SpatialCrop SpatialCropd SpatialPad
        SpatialPadd SpatialResample SpatialResampled SplitDim SplitDimd SqueezeDim
        SqueezeDimd StdShiftIntensity StdShiftIntensityd ThresholdIntensity
        ThresholdIntensityd ToMetaTensord ToNumpy ToNumpyd ToPIL ToPILd ToTensor
        ToTensord TransformPointsImageToWorldd TransformPointsWorldToImaged Transpose
        Transposed UltrasoundConfidenceMapTransform VoteEnsemble VoteEnsembled Zoom
        Zoomd
    """,
    "monai.networks.nets": """
        AHNet AttentionUnet AutoEncoder AutoencoderKL BasicUNet BasicUNetPlusPlus
        Classifier ControlNet Critic DAF3D DecoderOnlyTransformer DenseNet DenseNet121
        DenseNet169 DenseNet201 DenseNet264 DiNTS DiffusionModelUNet Discriminator
        DynUNet EfficientNet EfficientNetBN EfficientNetBNFeatures EfficientNetEncoder
        FlexibleUNet FullyConnectedNet Generator GlobalNet HighResBlock HighResNet
        HyenaNDUNETR LocalNet MILModel MaskedAutoEncoderViT MedNeXt
        MultiScalePatchDiscriminator NaViT NetAdapter PatchDiscriminator PatchMerging
        PatchMergingV2 Quicknat RegUNet Regressor ResNet ResNetBlock ResNetBottleneck
        ResNetEncoder ResNetFeatures SENet SENet154 SEResNet101 SEResNet152 SEResNet50
        SEResNext101 SEResNext50 SPADEAutoencoderKL SPADEDiffusionModelUNet SPADENet
        SegResNet SegResNetDS SegResNetDS2 SegResNetVAE SwinUNETR TopologyConstruction
        TopologyInstance TopologySearch UNETR UNet VISTA3D VNet VQVAE VarAutoEncoder
        VarFullyConnectedNet ViT ViTAutoEnc VoxelMorph VoxelMorphUNet
    """,
    "monai.losses": """
        AUCMLoss AsymmetricUnifiedFocalLoss BarlowTwinsLoss BendingEnergyLoss
        BoundaryLoss BoxGIoULoss ContrastiveLoss DeepSupervisionLoss DiceCELoss
        DiceFocalLoss DiceLoss DiffusionLoss FocalLoss GeneralizedDiceFocalLoss
        GeneralizedDiceLoss GeneralizedWassersteinDiceLoss GlobalMutualInformationLoss
        HausdorffDTLoss JukeboxLoss LocalNormalizedCrossCorrelationLoss
        LogHausdorffDTLoss MCCLoss MaskedDiceLoss MaskedLoss MultiScaleLoss NACLLoss
        PatchAdversarialLoss SSIMLoss SURELoss SoftDiceclDiceLoss SoftclDiceLoss
        TverskyLoss
    """,
    "monai.inferers": """
        ControlNetDiffusionInferer ControlNetLatentDiffusionInferer DiffusionInferer
        LatentDiffusionInferer PatchInferer SaliencyInferer SimpleInferer SliceInferer
        SlidingWindowInferer SlidingWindowInfererAdapt
    """,
    "monai.metrics": """
        AbsoluteVolumeDifferenceMetric AveragePrecisionMetric CalibrationErrorMetric
        ConfusionMatrixMetric DiceMetric EmbeddingCollapseMetric FBetaScore FIDMetric
        GeneralizedDiceScore HausdorffDistanceMetric LabelQualityScore LossMetric
        MAEMetric MAPEMetric MMDMetric MSEMetric MeanIoU MetricsReloadedBinary
        MetricsReloadedCategorical MultiScaleSSIMMetric PSNRMetric PanopticQualityMetric
        RMSEMetric ROCAUCMetric SSIMMetric SurfaceDiceMetric SurfaceDistanceMetric
        VarianceMetric
    """,
    "monai.apps.deepgrow.transforms": """
        AddGuidanceFromPointsd AddGuidanceSignald AddInitialSeedPointd
        AddRandomGuidanced Fetch2DSliced FindAllValidSlicesd FindDiscrepancyRegionsd
        Resize ResizeGuidanced RestoreLabeld SpatialCrop SpatialCropForegroundd
        SpatialCropGuidanced
    """,
    "torch.optim": """
        ASGD Adadelta Adafactor Adagrad Adam AdamW Adamax LBFGS Muon NAdam RAdam RMSprop
        Rprop SGD SparseAdam
    """,
    "torch.optim.lr_scheduler": """
        ChainedScheduler ConstantLR CosineAnnealingLR CosineAnnealingWarmRestarts
        CyclicLR ExponentialLR LinearLR MultiStepLR OneCycleLR PolynomialLR
        ReduceLROnPlateau SequentialLR StepLR
    """,
    "carina.engine.transforms": """
        LoadVolume LoadVolumed
    """,
    "carina.interactive": """
        AddGuidance AddGuidanced ClickSimulation InteractionCrop InteractionCropd
        KeepStructured RandMirrorComplete RandMirrorCompleted RandTruncate RandTruncated
        SelectLabel SelectLabeld
        StructureSlice StructureSliced
    """,
}

#: Arguments that make an allowed network download weights when true (refused in uploads).
DOWNLOAD_ARGUMENTS = ("pretrained", "pretrained_url", "path_or_repo_id")


def allowed_names() -> dict[str, tuple[str, ...]]:
    """The allowed component names, by package."""
    return {package: tuple(names.split()) for package, names in _NAMES.items()}


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every ``_target_`` spelling of an allowed component: ``package.Name``, the defining
    module's ``module.Name``, and for MONAI's components the bare ``Name`` when MONAI resolves it
    to that very class (``Affine`` is ambiguous, so only its dotted spellings count). Imports only
    the packages listed here."""
    from monai.bundle.config_item import ComponentLocator

    locator = ComponentLocator()
    spellings: set[str] = set()
    for package, names in allowed_names().items():
        module = importlib.import_module(package)
        for name in names:
            component = getattr(module, name, None)
            if component is None:  # not in this version of the library
                continue
            spellings.add(f"{package}.{name}")
            spellings.add(f"{component.__module__}.{component.__qualname__}")
            resolved = locator.get_component_module_name(name)
            if isinstance(resolved, str) and resolved == component.__module__:
                spellings.add(name)
    return frozenset(spellings)
